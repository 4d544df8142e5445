"""The shared adapters every service stands on: settings, the database pool and migrations, the
Kafka producer and consumers (`kafka`, `fixes`, `deadletters`, `kafka_admin`), Redis live state
(`livestate`), reports refused for good (`refusals`), fault classes and the event loop.

Production runs these (with the services above them); development tooling lives in `devtools`.
Imports `contracts` only, never a service package.
"""
