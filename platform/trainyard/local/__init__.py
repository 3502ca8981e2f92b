"""The embedded local stack: a Ray head, an MLflow server and the Trainyard server on one machine."""
