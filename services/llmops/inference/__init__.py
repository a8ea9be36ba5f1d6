"""Inference service: model backends, versioned prompt templates, RAG, traced generation."""
