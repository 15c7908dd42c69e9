"""grpcio compatibility: grpcio-tools' generated code (``x_pb2_grpc.py``) runs
unchanged on ``dubbo.Server`` (``server``) and over ``dubbo.Channel`` (``channel``)."""
