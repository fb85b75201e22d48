"""The artefacts ote-face reads and writes, each with one typed reader and writer: checkpoints
(``checkpoint``), IRs and their ``export_info.yaml`` (``formats``)."""
