"""The DABench builder: Civitai reader and crawler, filters, reverse mapping, descriptions, splits."""
