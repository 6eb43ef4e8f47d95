"""pydantic models of every spec and status; CRDs are generated from them."""
