"""Stream stages: thin Kafka adapters around pure processors."""
