"""The compiled .proto files of the built-in services (serialized
``google.protobuf.FileDescriptorProto``), so they load on any protobuf runtime from
4.21 on: no protoc gencode, which checks the runtime's version at import.

The source is ``protos/``; regenerate this file after editing a .proto there with
``python -m dubbo.services._descriptors`` (needs grpcio-tools, from the test extra).
tests/test_health.py checks that the two agree.
"""

from __future__ import annotations

import os

__all__ = ["FILES", "PROTO_ROOT", "compile_protos"]

PROTO_ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "protos")
PROTO_FILES = (
    "grpc/health/v1/health.proto",
    "grpc/reflection/v1/reflection.proto",
    "grpc/reflection/v1alpha/reflection.proto",
)

# file name -> serialized FileDescriptorProto (no source info); generated, do not edit.
FILES: dict[str, bytes] = {
# BEGIN GENERATED
    'grpc/health/v1/health.proto': (
        b'\n\x1bgrpc/health/v1/health.proto\x12\x0egrpc.health.v1".\n'
        b'\x12HealthCheckRequest\x12\x18\n\x07service\x18\x01 \x01(\tR\x07service"\xb1\x01'
        b'\n\x13HealthCheckResponse\x12I\n\x06status\x18\x01 \x01(\x0e21.grpc.hea'
        b'lth.v1.HealthCheckResponse.ServingStatusR\x06status'
        b'"O\n\rServingStatus\x12\x0b\n\x07UNKNOWN\x10\x00\x12\x0b\n\x07SERVING\x10\x01\x12\x0f\n\x0bN'
        b'OT_SERVING\x10\x02\x12\x13\n\x0fSERVICE_UNKNOWN\x10\x03"\x13\n\x11HealthListR'
        b'equest"\xc4\x01\n\x12HealthListResponse\x12L\n\x08statuses\x18\x01 \x03(\x0b2'
        b'0.grpc.health.v1.HealthListResponse.StatusesEntr'
        b'yR\x08statuses\x1a`\n\rStatusesEntry\x12\x10\n\x03key\x18\x01 \x01(\tR\x03key\x129'
        b'\n\x05value\x18\x02 \x01(\x0b2#.grpc.health.v1.HealthCheckRespon'
        b'seR\x05value:\x028\x012\xfd\x01\n\x06Health\x12P\n\x05Check\x12".grpc.health.'
        b'v1.HealthCheckRequest\x1a#.grpc.health.v1.HealthChe'
        b'ckResponse\x12M\n\x04List\x12!.grpc.health.v1.HealthListRe'
        b'quest\x1a".grpc.health.v1.HealthListResponse\x12R\n\x05Wat'
        b'ch\x12".grpc.health.v1.HealthCheckRequest\x1a#.grpc.he'
        b'alth.v1.HealthCheckResponse0\x01Bp\n\x11io.grpc.health.'
        b'v1B\x0bHealthProtoP\x01Z,google.golang.org/grpc/health'
        b'/grpc_health_v1\xa2\x02\x0cGrpcHealthV1\xaa\x02\x0eGrpc.Health.V1b'
        b'\x06proto3'
    ),
    'grpc/reflection/v1/reflection.proto': (
        b'\n#grpc/reflection/v1/reflection.proto\x12\x12grpc.refl'
        b'ection.v1"\xf3\x02\n\x17ServerReflectionRequest\x12\x12\n\x04host\x18\x01 '
        b'\x01(\tR\x04host\x12*\n\x10file_by_filename\x18\x03 \x01(\tH\x00R\x0efileByFil'
        b'ename\x126\n\x16file_containing_symbol\x18\x04 \x01(\tH\x00R\x14fileCon'
        b'tainingSymbol\x12b\n\x19file_containing_extension\x18\x05 \x01(\x0b'
        b'2$.grpc.reflection.v1.ExtensionRequestH\x00R\x17fileCo'
        b'ntainingExtension\x12B\n\x1dall_extension_numbers_of_ty'
        b'pe\x18\x06 \x01(\tH\x00R\x19allExtensionNumbersOfType\x12%\n\rlist_se'
        b'rvices\x18\x07 \x01(\tH\x00R\x0clistServicesB\x11\n\x0fmessage_request"'
        b"f\n\x10ExtensionRequest\x12'\n\x0fcontaining_type\x18\x01 \x01(\tR\x0eco"
        b'ntainingType\x12)\n\x10extension_number\x18\x02 \x01(\x05R\x0fextensio'
        b'nNumber"\xae\x04\n\x18ServerReflectionResponse\x12\x1d\n\nvalid_ho'
        b'st\x18\x01 \x01(\tR\tvalidHost\x12V\n\x10original_request\x18\x02 \x01(\x0b2+.'
        b'grpc.reflection.v1.ServerReflectionRequestR\x0forig'
        b'inalRequest\x12f\n\x18file_descriptor_response\x18\x04 \x01(\x0b2*.'
        b'grpc.reflection.v1.FileDescriptorResponseH\x00R\x16fil'
        b'eDescriptorResponse\x12r\n\x1eall_extension_numbers_res'
        b'ponse\x18\x05 \x01(\x0b2+.grpc.reflection.v1.ExtensionNumber'
        b'ResponseH\x00R\x1ballExtensionNumbersResponse\x12_\n\x16list_'
        b"services_response\x18\x06 \x01(\x0b2'.grpc.reflection.v1.Lis"
        b'tServiceResponseH\x00R\x14listServicesResponse\x12J\n\x0eerro'
        b'r_response\x18\x07 \x01(\x0b2!.grpc.reflection.v1.ErrorRespo'
        b'nseH\x00R\rerrorResponseB\x12\n\x10message_response"L\n\x16File'
        b'DescriptorResponse\x122\n\x15file_descriptor_proto\x18\x01 \x03('
        b'\x0cR\x13fileDescriptorProto"j\n\x17ExtensionNumberRespons'
        b'e\x12$\n\x0ebase_type_name\x18\x01 \x01(\tR\x0cbaseTypeName\x12)\n\x10exten'
        b'sion_number\x18\x02 \x03(\x05R\x0fextensionNumber"T\n\x13ListServic'
        b'eResponse\x12=\n\x07service\x18\x01 \x03(\x0b2#.grpc.reflection.v1.'
        b'ServiceResponseR\x07service"%\n\x0fServiceResponse\x12\x12\n\x04n'
        b'ame\x18\x01 \x01(\tR\x04name"S\n\rErrorResponse\x12\x1d\n\nerror_code\x18\x01'
        b' \x01(\x05R\terrorCode\x12#\n\rerror_message\x18\x02 \x01(\tR\x0cerrorMes'
        b'sage2\x89\x01\n\x10ServerReflection\x12u\n\x14ServerReflectionInf'
        b'o\x12+.grpc.reflection.v1.ServerReflectionRequest\x1a,'
        b'.grpc.reflection.v1.ServerReflectionResponse(\x010\x01'
        b'Bf\n\x15io.grpc.reflection.v1B\x15ServerReflectionProto'
        b'P\x01Z4google.golang.org/grpc/reflection/grpc_refle'
        b'ction_v1b\x06proto3'
    ),
    'grpc/reflection/v1alpha/reflection.proto': (
        b'\n(grpc/reflection/v1alpha/reflection.proto\x12\x17grpc'
        b'.reflection.v1alpha"\xf8\x02\n\x17ServerReflectionRequest\x12'
        b'\x12\n\x04host\x18\x01 \x01(\tR\x04host\x12*\n\x10file_by_filename\x18\x03 \x01(\tH\x00R'
        b'\x0efileByFilename\x126\n\x16file_containing_symbol\x18\x04 \x01(\tH'
        b'\x00R\x14fileContainingSymbol\x12g\n\x19file_containing_exten'
        b'sion\x18\x05 \x01(\x0b2).grpc.reflection.v1alpha.ExtensionRe'
        b'questH\x00R\x17fileContainingExtension\x12B\n\x1dall_extensio'
        b'n_numbers_of_type\x18\x06 \x01(\tH\x00R\x19allExtensionNumbersOf'
        b'Type\x12%\n\rlist_services\x18\x07 \x01(\tH\x00R\x0clistServicesB\x11\n\x0fm'
        b'essage_request"f\n\x10ExtensionRequest\x12\'\n\x0fcontaining'
        b'_type\x18\x01 \x01(\tR\x0econtainingType\x12)\n\x10extension_number\x18'
        b'\x02 \x01(\x05R\x0fextensionNumber"\xc7\x04\n\x18ServerReflectionRespo'
        b'nse\x12\x1d\n\nvalid_host\x18\x01 \x01(\tR\tvalidHost\x12[\n\x10original_r'
        b'equest\x18\x02 \x01(\x0b20.grpc.reflection.v1alpha.ServerRef'
        b'lectionRequestR\x0foriginalRequest\x12k\n\x18file_descript'
        b'or_response\x18\x04 \x01(\x0b2/.grpc.reflection.v1alpha.File'
        b'DescriptorResponseH\x00R\x16fileDescriptorResponse\x12w\n\x1e'
        b'all_extension_numbers_response\x18\x05 \x01(\x0b20.grpc.refl'
        b'ection.v1alpha.ExtensionNumberResponseH\x00R\x1ballExt'
        b'ensionNumbersResponse\x12d\n\x16list_services_response\x18'
        b'\x06 \x01(\x0b2,.grpc.reflection.v1alpha.ListServiceRespo'
        b'nseH\x00R\x14listServicesResponse\x12O\n\x0eerror_response\x18\x07 '
        b'\x01(\x0b2&.grpc.reflection.v1alpha.ErrorResponseH\x00R\re'
        b'rrorResponseB\x12\n\x10message_response"L\n\x16FileDescript'
        b'orResponse\x122\n\x15file_descriptor_proto\x18\x01 \x03(\x0cR\x13fileD'
        b'escriptorProto"j\n\x17ExtensionNumberResponse\x12$\n\x0ebas'
        b'e_type_name\x18\x01 \x01(\tR\x0cbaseTypeName\x12)\n\x10extension_num'
        b'ber\x18\x02 \x03(\x05R\x0fextensionNumber"Y\n\x13ListServiceRespons'
        b'e\x12B\n\x07service\x18\x01 \x03(\x0b2(.grpc.reflection.v1alpha.Ser'
        b'viceResponseR\x07service"%\n\x0fServiceResponse\x12\x12\n\x04name'
        b'\x18\x01 \x01(\tR\x04name"S\n\rErrorResponse\x12\x1d\n\nerror_code\x18\x01 \x01('
        b'\x05R\terrorCode\x12#\n\rerror_message\x18\x02 \x01(\tR\x0cerrorMessag'
        b'e2\x93\x01\n\x10ServerReflection\x12\x7f\n\x14ServerReflectionInfo\x120'
        b'.grpc.reflection.v1alpha.ServerReflectionRequest'
        b'\x1a1.grpc.reflection.v1alpha.ServerReflectionRespo'
        b'nse(\x010\x01Bp\n\x1aio.grpc.reflection.v1alphaB\x15ServerRef'
        b'lectionProtoP\x01Z9google.golang.org/grpc/reflectio'
        b'n/grpc_reflection_v1alphab\x06proto3'
    ),
# END GENERATED
}


def compile_protos() -> dict[str, bytes]:
    """Compile ``PROTO_FILES`` with grpcio-tools' protoc: file name -> serialized
    FileDescriptorProto."""
    import tempfile

    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "set.pb")
        if protoc.main(["protoc", f"-I{PROTO_ROOT}", f"--descriptor_set_out={out}",
                        *PROTO_FILES]) != 0:
            raise RuntimeError("protoc failed")
        with open(out, "rb") as f:
            files = descriptor_pb2.FileDescriptorSet.FromString(f.read()).file
    return {f.name: f.SerializeToString(deterministic=True) for f in files}


def _rewrite() -> None:
    path = os.path.abspath(__file__)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    head, rest = text.split("# BEGIN GENERATED\n", 1)
    _, tail = rest.split("# END GENERATED\n", 1)
    body = "".join(f"    {name!r}: (\n" + "".join(
        f"        {data[i:i + 48]!r}\n" for i in range(0, len(data), 48)) + "    ),\n"
        for name, data in compile_protos().items())
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{head}# BEGIN GENERATED\n{body}# END GENERATED\n{tail}")


if __name__ == "__main__":
    _rewrite()
