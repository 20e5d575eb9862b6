-- First start of the postgres volume: MLflow gets its own role and database beside driftloop's.
CREATE ROLE mlflow LOGIN PASSWORD 'mlflow';
CREATE DATABASE mlflow OWNER mlflow;
