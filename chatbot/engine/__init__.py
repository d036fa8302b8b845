"""The model side: the only package that imports torch, transformers or bitsandbytes.

Nothing here is imported eagerly; import the submodule you need (`chatbot.engine.blip2`).
"""
