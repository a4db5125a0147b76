"""HuggingFace transformers models of graftkit; importing it registers them with the Auto* classes."""
