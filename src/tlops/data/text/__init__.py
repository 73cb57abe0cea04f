"""Text classification data: tables and folders of texts, decoded, normalised, quarantined, de-duplicated and split."""
