"""Retrieval: load documents, split, embed (ONNX), store in Qdrant, search.

Import from here: ``KnowledgeBase``, ``Passage``, ``IngestReport``, ``DocumentInfo``.
"""

from voice.rag.kb import DocumentInfo, IngestReport, KnowledgeBase, Passage

__all__ = ["DocumentInfo", "IngestReport", "KnowledgeBase", "Passage"]
