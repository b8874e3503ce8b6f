"""The workflow definition (ASL template) and its renderer."""
