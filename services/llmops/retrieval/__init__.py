"""Retrieval service: chunking, embeddings and hybrid search over a vector store."""
