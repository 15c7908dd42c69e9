"""Triple over TLS (ALPN h2) with grpcio on the other end, both ways."""

from __future__ import annotations

import ast
import contextlib
import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
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
from dubbo.transport.tls import TLSLayer, client_context, prepare, server_context

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


def _client_certificate(subject: x509.Name, alt_names: list | None, key, issuer_cert,
                        issuer_key) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(issuer_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1)))
    if alt_names is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _rdn(*attributes: tuple[x509.ObjectIdentifier, str]) -> x509.RelativeDistinguishedName:
    return x509.RelativeDistinguishedName([x509.NameAttribute(oid, value)
                                           for oid, value in attributes])


# A subject that needs every escape of RFC 2253, a multi-valued RDN, two CNs, non-ASCII
# text and OIDs grpcio's BoringSSL has no name for; and every kind of alternative name.
RICH_SUBJECT = x509.Name([
    _rdn((NameOID.COUNTRY_NAME, "DE")),
    _rdn((NameOID.ORGANIZATION_NAME, 'Acme, Inc. <"x">; a+b\\c')),
    _rdn((NameOID.ORGANIZATIONAL_UNIT_NAME, "\u00dcnit \u00e9"), (NameOID.USER_ID, "u1")),
    _rdn((NameOID.COMMON_NAME, " #rich ")), _rdn((NameOID.COMMON_NAME, "second")),
    _rdn((NameOID.EMAIL_ADDRESS, "a@example.com")), _rdn((NameOID.DOMAIN_COMPONENT, "dc")),
    _rdn((NameOID.ORGANIZATION_IDENTIFIER, "VATDE-1")),
    _rdn((x509.ObjectIdentifier("1.2.3.4.5"), "unknown")),
    _rdn((NameOID.LOCALITY_NAME, "tab\there\x7f")),
])
RICH_ALT_NAMES = [
    x509.DNSName("rich.example"), x509.RFC822Name("rich@example.com"),
    x509.UniformResourceIdentifier("spiffe://example.org/ns/rich"),
    x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    x509.IPAddress(ipaddress.ip_address("::ffff:10.1.2.3")),
    x509.DirectoryName(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dir")])),
    x509.RegisteredID(x509.ObjectIdentifier("1.2.3")),
    x509.OtherName(x509.ObjectIdentifier("1.2.3.4"), b"\x0c\x03abc"),
    x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
]


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
    rich_key, cn_only_key = ec.generate_private_key(ec.SECP256R1()), \
        ec.generate_private_key(ec.SECP256R1())
    rich_cert = _client_certificate(RICH_SUBJECT, RICH_ALT_NAMES, rich_key, ca_cert, ca_key)
    cn_only_cert = _client_certificate(_name("cn only"), None, cn_only_key, ca_cert, ca_key)
    paths = {}
    for label, data in (("ca.pem", _pem(ca_cert)), ("other_ca.pem", _pem(files["other_ca"][1])),
                        ("server.pem", _pem(server_cert)), ("server.key", _pem(server_key)),
                        ("client.pem", _pem(client_cert)), ("client.key", _pem(client_key)),
                        ("rich.pem", _pem(rich_cert)), ("rich.key", _pem(rich_key)),
                        ("cn_only.pem", _pem(cn_only_cert)), ("cn_only.key", _pem(cn_only_key))):
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


# --- Who called: ServicerContext.auth_context() / peer_identities() / peer_identity_key()

def _whoami(request: bytes, context) -> bytes:
    """The same handler on grpcio and on dubbo: what the call context says about the
    caller, as a Python literal."""
    return repr((context.auth_context(), context.peer_identities(),
                 context.peer_identity_key())).encode()


def _read(pki, name: str) -> bytes:
    with open(pki[name], "rb") as f:
        return f.read()


@contextlib.contextmanager
def _dubbo_whoami_server(ssl_context) -> Iterator[int]:
    service = RpcServiceHandler(SERVICE, [RpcMethodHandler.unary(_whoami, method_name="whoami")])
    server = dubbo.Server(ServiceConfig(service, port=0), ssl_context=ssl_context).start()
    try:
        yield server.port
    finally:
        server.stop(grace=1)


@contextlib.contextmanager
def _grpcio_whoami_server(credentials) -> Iterator[int]:
    server = grpc.server(ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {
        "whoami": grpc.unary_unary_rpc_method_handler(_whoami)})])
    port = server.add_insecure_port("127.0.0.1:0") if credentials is None else \
        server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


def _ask_with_grpcio(port: int, credentials):
    """Call whoami from a grpcio channel that sends SNI ``localhost``."""
    if credentials is None:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    else:
        channel = grpc.secure_channel(f"127.0.0.1:{port}", credentials,
                                      options=[("grpc.ssl_target_name_override", "localhost")])
    with channel:
        return ast.literal_eval(channel.unary_unary(f"/{SERVICE}/whoami")(b"", timeout=10).decode())


def _ask_with_dubbo(port: int, context):
    with _dubbo_client(port, context) as client:
        return ast.literal_eval(client.unary("whoami")(b"", timeout=10).decode())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["plaintext", "tls", "mtls", "mtls-rich", "mtls-cn-only"])
def test_caller_identity_matches_grpcio(pki, mode):
    """The same handler on a grpcio server and on ours, called by the same grpcio client,
    sees the same auth context, identities and identity key."""
    server_pem, server_key, ca = _read(pki, "server.pem"), _read(pki, "server.key"), \
        _read(pki, "ca.pem")
    if mode == "plaintext":
        ours, grpcio_server, channel = None, None, None
    elif mode == "tls":
        ours = server_context(pki["server.pem"], pki["server.key"])
        grpcio_server = grpc.ssl_server_credentials([(server_key, server_pem)])
        channel = grpc.ssl_channel_credentials(ca)
    else:
        who = {"mtls": "client", "mtls-rich": "rich", "mtls-cn-only": "cn_only"}[mode]
        ours = server_context(pki["server.pem"], pki["server.key"], cafile=pki["ca.pem"])
        grpcio_server = grpc.ssl_server_credentials([(server_key, server_pem)],
                                                    root_certificates=ca,
                                                    require_client_auth=True)
        channel = grpc.ssl_channel_credentials(ca, _read(pki, f"{who}.key"),
                                               _read(pki, f"{who}.pem"))
    with _dubbo_whoami_server(ours) as port:
        auth, identities, key = _ask_with_grpcio(port, channel)
    with _grpcio_whoami_server(grpcio_server) as port:
        theirs = _ask_with_grpcio(port, channel)
    # Python's ssl module cannot tell which key exchange group was negotiated.
    theirs[0].pop("ssl_negotiated_key_exchange_group", None)
    assert (auth, identities, key) == theirs

    if mode == "plaintext":
        assert auth == {"transport_security_type": [b"insecure"],
                        "security_level": [b"TSI_SECURITY_NONE"]}
        assert identities is None and key is None
        return
    assert auth["transport_security_type"] == [b"ssl"]
    assert auth["security_level"] == [b"TSI_PRIVACY_AND_INTEGRITY"]
    assert auth["ssl_requested_server_name"] == [b"localhost"]
    if mode == "tls":
        assert identities is None and key is None
        assert "x509_common_name" not in auth and "x509_pem_cert" not in auth
    elif mode == "mtls":
        assert auth["x509_common_name"] == [b"client"]
        assert auth["x509_subject"] == [b"CN=client"]
        assert auth["x509_pem_cert"] == [_read(pki, "client.pem")]
        assert auth["peer_dns"] == [b"localhost"] and auth["peer_ip"] == [b"127.0.0.1"]
        assert key == "x509_subject_alternative_name"
        assert identities == auth[key] == [b"localhost", b"127.0.0.1"]
    elif mode == "mtls-rich":
        assert auth["x509_common_name"] == [b" #rich "]  # the first CN
        assert auth["x509_subject"] == [  # as BoringSSL prints it
            rb'L=tab\09here\7F,1.2.3.4.5=#0C07756E6B6E6F776E,2.5.4.97=#0C0756415444452D31,'
            rb'DC=dc,emailAddress=a@example.com,CN=second,CN=\ #rich\ ,'
            rb'UID=u1+OU=\C3\9Cnit \C3\A9,O=Acme\, Inc. \<\"x\"\>\; a\+b\\c,C=DE']
        assert auth["peer_spiffe_id"] == [b"spiffe://example.org/ns/rich"]
        assert auth["peer_ip"] == [b"2001:db8::1", b"::ffff:10.1.2.3", b"10.0.0.1"]
        assert identities == [b"rich.example", b"rich@example.com",
                              b"spiffe://example.org/ns/rich", b"2001:db8::1",
                              b"::ffff:10.1.2.3"] + [b"other types of SAN"] * 3 + [b"10.0.0.1"]
    else:  # no alternative names: the common name identifies the caller
        assert key == "x509_common_name" and identities == [b"cn only"]


@pytest.mark.timeout(30)
def test_dubbo_client_certificate_identifies_the_caller(pki):
    mutual = server_context(pki["server.pem"], pki["server.key"], cafile=pki["ca.pem"])
    with _dubbo_whoami_server(mutual) as port:
        auth, identities, key = _ask_with_dubbo(port, client_context(
            pki["ca.pem"], certfile=pki["client.pem"], keyfile=pki["client.key"]))
    assert auth["x509_common_name"] == [b"client"]
    assert auth["x509_subject_alternative_name"] == [b"localhost", b"127.0.0.1"]
    assert auth["x509_pem_cert"] == [_read(pki, "client.pem")]
    assert key == "x509_subject_alternative_name"
    assert identities == [b"localhost", b"127.0.0.1"]
    assert "ssl_requested_server_name" not in auth  # no SNI for an IP address

    with _dubbo_whoami_server(server_context(pki["server.pem"], pki["server.key"])) as port:
        auth, identities, key = _ask_with_dubbo(port, client_context(pki["ca.pem"]))
    assert auth["transport_security_type"] == [b"ssl"] and "x509_common_name" not in auth
    assert identities is None and key is None

    with _dubbo_whoami_server(None) as port:
        assert _ask_with_dubbo(port, None) == (
            {"transport_security_type": [b"insecure"], "security_level": [b"TSI_SECURITY_NONE"]},
            None, None)


def test_sni_callback_of_the_caller_still_runs(pki):
    """prepare() records the requested server name around a context's own SNI callback,
    once, however often it is called."""
    seen = []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki["server.pem"], pki["server.key"])
    context.sni_callback = lambda ssl_object, name, ctx: seen.append(name)
    prepare(prepare(context))
    with _dubbo_whoami_server(context) as port:
        auth = _ask_with_grpcio(port, grpc.ssl_channel_credentials(_read(pki, "ca.pem")))[0]
    assert seen == ["localhost"]
    assert auth["ssl_requested_server_name"] == [b"localhost"]


@pytest.mark.timeout(30)
def test_tls_layer_reports_the_peer_certificate_once_the_handshake_is_done(pki):
    server_layer = TLSLayer(server_context(pki["server.pem"], pki["server.key"],
                                           cafile=pki["ca.pem"]), server_side=True)
    client_layer = TLSLayer(client_context(pki["ca.pem"], certfile=pki["client.pem"],
                                           keyfile=pki["client.key"]),
                            server_side=False, server_hostname="localhost")
    assert server_layer.peer_certificate() is None
    assert server_layer.auth_context() == ({"transport_security_type": [b"ssl"]}, None)
    # Drive both handshakes in memory, as the I/O loop does with socket bytes.
    to_client = b""
    client_done = server_done = False
    for _ in range(20):
        client_done, to_server = client_layer.handshake_step(to_client)
        server_done, to_client = server_layer.handshake_step(to_server)
        if client_done and server_done:
            break
    assert client_done and server_done
    assert server_layer.peer_certificate() == ssl.PEM_cert_to_DER_cert(
        _read(pki, "client.pem").decode())
    assert client_layer.peer_certificate() == ssl.PEM_cert_to_DER_cert(
        _read(pki, "server.pem").decode())
    auth, key = server_layer.auth_context()
    assert auth["x509_common_name"] == [b"client"]
    assert auth["ssl_requested_server_name"] == [b"localhost"]
    assert key == "x509_subject_alternative_name" and auth[key] == [b"localhost", b"127.0.0.1"]
    auth[key].append(b"mine")  # the caller's copy
    assert server_layer.auth_context()[0][key] == [b"localhost", b"127.0.0.1"]
