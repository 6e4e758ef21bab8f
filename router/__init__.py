"""Pure routing logic: arrays and records in, decisions out. No Kafka, no Ray imports here."""
