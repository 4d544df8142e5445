"""Kafka topics, record schemas, the Faust app and its agents, and the ops tail."""
