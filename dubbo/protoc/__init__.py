"""Code generation from .proto files: ``python -m dubbo.protoc`` (grpcio-tools' protoc
with our plugin) and the ``protoc-gen-dubbo`` plugin for any protoc.

``generator`` turns protoc's plugin request into ``x_dubbo.py`` sources without I/O;
``plugin`` is the executable protoc runs; ``__main__`` drives grpcio-tools' protoc.
"""
