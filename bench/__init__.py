"""taskit's benchmark against its peers; see bench/README.md. Not part of the package."""
