"""The only package that imports kafka-python. It moves bytes and dicts; it never sees a
model or a threshold."""
