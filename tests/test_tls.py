"""Triple over TLS (ALPN h2) with grpcio on the other end, both ways."""

from __future__ import annotations

import datetime
import ipaddress
import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import dubbo
from dubbo.configs import ReferenceConfig, ServiceConfig
from dubbo.proxy.handlers import RpcMethodHandler, RpcServiceHandler
from dubbo.tls import client_context, server_context

SERVICE = "test.Secure"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(subject: str, key, issuer_name, issuer_key, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A throwaway CA and a server certificate for 127.0.0.1/localhost; plus a second CA
    that signed nothing we serve."""
    folder = tmp_path_factory.mktemp("pki")
    files = {}
    for label in ("ca", "other_ca"):
        key = ec.generate_private_key(ec.SECP256R1())
        files[label] = (key, _certificate(f"{label} root", key, _name(f"{label} root"), key,
                                          ca=True))
    ca_key, ca_cert = files["ca"]
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _certificate("localhost", server_key, ca_cert.subject, ca_key, ca=False)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client_cert = _certificate("client", client_key, ca_cert.subject, ca_key, ca=False)
    paths = {}
    for label, data in (("ca.pem", _pem(ca_cert)), ("other_ca.pem", _pem(files["other_ca"][1])),
                        ("server.pem", _pem(server_cert)), ("server.key", _pem(server_key)),
                        ("client.pem", _pem(client_cert)), ("client.key", _pem(client_key))):
        (folder / label).write_bytes(data)
        paths[label] = str(folder / label)
    return paths


def _echo_service():
    def echo(request):
        return request

    def chat(requests):
        for request in requests:
            yield request.upper()

    return RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(echo),
                                       RpcMethodHandler.bi_stream(chat)])


@pytest.fixture
def tls_server(pki):
    server = dubbo.Server(ServiceConfig(_echo_service(), port=0),
                          ssl_context=server_context(pki["server.pem"], pki["server.key"]))
    server.start()
    yield server
    server.stop(grace=1)


def _dubbo_client(port: int, context=None) -> dubbo.Client:
    return dubbo.Client(ReferenceConfig.from_url(f"tri://127.0.0.1:{port}/{SERVICE}"),
                        ssl_context=context)


@pytest.mark.timeout(30)
def test_dubbo_client_and_server_over_tls(pki, tls_server):
    with _dubbo_client(tls_server.port, client_context(pki["ca.pem"])) as client:
        assert client.unary("echo")(b"secret", timeout=10) == b"secret"
        big = bytes(range(256)) * 16384  # 4 MiB, many TLS records
        assert client.unary("echo")(big, timeout=20) == big
        assert list(client.bidi_stream("chat")(iter([b"a", b"b"]), timeout=10)) == [b"A", b"B"]


@pytest.mark.timeout(30)
def test_grpcio_client_to_dubbo_tls_server(pki, tls_server):
    with open(pki["ca.pem"], "rb") as f:
        credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
    with grpc.secure_channel(f"127.0.0.1:{tls_server.port}", credentials) as channel:
        assert channel.unary_unary(f"/{SERVICE}/echo")(b"hello", timeout=10) == b"hello"
        chat = channel.stream_stream(f"/{SERVICE}/chat")
        assert list(chat(iter([b"x", b"y"]), timeout=10)) == [b"X", b"Y"]


@pytest.mark.timeout(30)
def test_dubbo_client_to_grpcio_tls_server(pki):
    with open(pki["server.key"], "rb") as key, open(pki["server.pem"], "rb") as cert:
        credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
    server = grpc.server(ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "echo": grpc.unary_unary_rpc_method_handler(lambda request, context: request[::-1])})])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        with _dubbo_client(port, client_context(pki["ca.pem"])) as client:
            assert client.unary("echo")(b"abc", timeout=10) == b"cba"
    finally:
        server.stop(None)


@pytest.mark.timeout(30)
def test_untrusted_certificate_is_refused_with_unavailable(pki, tls_server):
    with _dubbo_client(tls_server.port, client_context(pki["other_ca.pem"])) as client:
        with pytest.raises(dubbo.RpcError) as info:
            client.unary("echo")(b"x", timeout=10)
    assert info.value.code is dubbo.StatusCode.UNAVAILABLE
    assert "certificate verify failed" in info.value.details


@pytest.mark.timeout(30)
def test_plaintext_client_fails_and_the_tls_server_keeps_serving(pki, tls_server):
    with _dubbo_client(tls_server.port) as plain:
        with pytest.raises(dubbo.RpcError) as info:
            plain.unary("echo")(b"x", timeout=5)
    assert info.value.code in (dubbo.StatusCode.UNAVAILABLE, dubbo.StatusCode.INTERNAL)
    results = []

    def call() -> None:
        with _dubbo_client(tls_server.port, client_context(pki["ca.pem"])) as client:
            results.append(client.unary("echo")(b"still here", timeout=10))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert results == [b"still here"] * 4


@pytest.mark.timeout(30)
def test_mutual_tls_requires_a_client_certificate(pki):
    context = server_context(pki["server.pem"], pki["server.key"], cafile=pki["ca.pem"])
    server = dubbo.Server(ServiceConfig(_echo_service(), port=0), ssl_context=context).start()
    try:
        with _dubbo_client(server.port, client_context(
                pki["ca.pem"], certfile=pki["client.pem"], keyfile=pki["client.key"])) as client:
            assert client.unary("echo")(b"me", timeout=10) == b"me"
        with _dubbo_client(server.port, client_context(pki["ca.pem"])) as anonymous:
            with pytest.raises(dubbo.RpcError) as info:
                anonymous.unary("echo")(b"x", timeout=10)
        assert info.value.code is dubbo.StatusCode.UNAVAILABLE
    finally:
        server.stop(grace=1)
