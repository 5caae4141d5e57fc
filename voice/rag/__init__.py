"""Retrieval: load documents, split, embed (ONNX), store in Qdrant, search.

Import from here: ``KnowledgeBase``, ``Passage``, ``IngestReport``, ``DocumentInfo``, ``open_kb``.
"""

from voice.rag.kb import DocumentInfo, IngestReport, KnowledgeBase, Passage, open_kb

__all__ = ["DocumentInfo", "IngestReport", "KnowledgeBase", "Passage", "open_kb"]
