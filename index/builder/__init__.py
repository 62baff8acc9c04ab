"""The DABench builder: Civitai reader, crawler, filters, reverse mapping, splits, catalog."""
