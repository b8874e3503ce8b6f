import json
import base64
import boto3

# Fill this in with the name of your deployed model
ENDPOINT = "${endpoint_name}"

runtime = boto3.client('runtime.sagemaker')

def lambda_handler(event, context):

    # Decode the image data
    image = base64.b64decode(event["body"]["image_data"])

    # Make a prediction:
    response = runtime.invoke_endpoint(EndpointName=ENDPOINT,
                                       ContentType='image/png',
                                       Body=image)
    inferences = response['Body'].read().decode('utf-8')

    # We return the data back to the Step Function
    event["body"]["inferences"] = inferences
    return {
        'statusCode': 200,
        'body': event["body"]
    }
