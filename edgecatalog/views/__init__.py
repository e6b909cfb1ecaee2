"""One blueprint per resource. A view parses, calls the domain, serializes and wraps."""
