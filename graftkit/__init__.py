"""graftkit: ten research methods grafted onto the frameworks their users already work in.

This hub package holds what the methods share: the CLI, the experiment registry, the report writer,
atomic checkpoint I/O and the embedded data makers. Each method's math lives in its host package
(``hf_models``, ``plugins``, ``graph_ext``, ``vision_ext``, ``omics_ext``).
"""

__version__ = "0.1.0"
