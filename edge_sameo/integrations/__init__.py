"""Adapters from edge-sameo results to other libraries' types. Each module imports its
library lazily; a missing one raises an ImportError that names the pip extra."""
