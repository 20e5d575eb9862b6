# The official MLflow image lacks the PostgreSQL driver and the S3 client its server needs
# for a postgres backend store and artifacts in MinIO; the tag matches the client pin.
FROM ghcr.io/mlflow/mlflow:v3.17.2
RUN pip install --no-cache-dir psycopg2-binary==2.9.13 boto3==1.44.8
