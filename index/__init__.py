"""DABench catalog: Civitai ingestion, filters, reverse mapping, cards, splits, hybrid index."""
