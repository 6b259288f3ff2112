"""xlibrary: tools for data work. The pipeline engine lives in :mod:`xlibrary.pipeline`."""
