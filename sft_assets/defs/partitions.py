import dagster as dg

# One partition per file under the raw root, keyed by its relative path.
corpus_partitions = dg.DynamicPartitionsDefinition(name="corpus")
