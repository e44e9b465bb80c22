"""Being the notebook pod, for tests: nb2flow run exactly as it runs inside a JupyterHub pod.

A private mount namespace (``unshare``; these machines run as root) in which a temporary folder
is mounted at ``/var/run/secrets/kubernetes.io/serviceaccount`` with ``token``, ``namespace`` and
``ca.crt``, and the notebook's folder at ``/home/jovyan`` (the home volume's mountPath in the pod
fixture); ``KUBERNETES_SERVICE_HOST``/``PORT`` point at the test API server, served over TLS with a
certificate signed by that CA; ``HOSTNAME`` is the pod's name. No option or variable that exists
only for tests.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

SA_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
HOME = "/home/jovyan"


def unshare_problem() -> str | None:
    """Why a private mount namespace cannot be made here (None when it can)."""
    if not shutil.which("unshare"):
        return "no unshare command"
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs tmpfs /run"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    if r.returncode != 0:
        return f"unshare --mount is not permitted here: {r.stderr.strip()}"
    for path in (Path(sys.executable).resolve(), Path(__file__).resolve()):
        if str(path).startswith("/home/") or str(path).startswith("/run/"):
            return f"{path} is under /home or /run, which the pod's mounts cover"
    return None


def service_account_token(namespace: str, name: str) -> str:
    """A token shaped as Kubernetes issues them (a JWT); the test server checks it verbatim."""
    def part(obj) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    claims = {"iss": "https://kubernetes.default.svc.cluster.local", "sub": f"system:serviceaccount:{namespace}:{name}",
              "kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": name, "uid": "9f0c1d2e-0000-4000-8000-000000000001"}}}
    return f"{part({'alg': 'RS256', 'kid': 'test'})}.{part(claims)}.c2lnbmF0dXJl"


def make_pki(folder: Path, hosts=("127.0.0.1",)) -> dict:
    """A CA, and a server certificate it signs for ``hosts`` (plus one from another CA, for the wrong-CA case)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def key():
        return ec.generate_private_key(ec.SECP256R1())

    def write_key(k, path):
        path.write_bytes(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    def ca(name):
        k = key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(k.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(k, hashes.SHA256()))
        return k, cert

    def server(ca_key, ca_cert):
        k = key()
        names = [x509.IPAddress(ipaddress.ip_address(h)) for h in hosts] + [x509.DNSName("kubernetes.default.svc")]
        cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
                .issuer_name(ca_cert.subject).public_key(k.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(names), critical=False)
                .sign(ca_key, hashes.SHA256()))
        return k, cert

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for label in ("cluster", "other"):
        ca_key, ca_cert = ca(f"{label}-ca")
        srv_key, srv_cert = server(ca_key, ca_cert)
        (folder / f"{label}-ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{label}-server.crt").write_bytes(srv_cert.public_bytes(serialization.Encoding.PEM))
        write_key(srv_key, folder / f"{label}-server.key")
        out[label] = (folder / f"{label}-ca.crt", folder / f"{label}-server.crt", folder / f"{label}-server.key")
    return out


class Pod:
    """The notebook pod: its service-account folder, its home folder, its environment."""

    def __init__(self, root: Path, *, name: str, namespace: str, token: str | None, ca_crt: Path | None, port: int) -> None:
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.sa = None
        if token is not None:
            self.sa = root / "serviceaccount"
            self.sa.mkdir(parents=True, exist_ok=True)
            (self.sa / "token").write_text(token)
            (self.sa / "namespace").write_text(namespace)
            shutil.copy(ca_crt, self.sa / "ca.crt")
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "NO_COLOR": "1",
                    "HOME": HOME, "HOSTNAME": name, "KUBERNETES_SERVICE_HOST": "127.0.0.1",
                    "KUBERNETES_SERVICE_PORT": str(port), "KUBERNETES_PORT": f"tcp://127.0.0.1:{port}",
                    "JUPYTERHUB_API_TOKEN": "c0ffee00c0ffee00c0ffee00c0ffee00",
                    # a local run in the pod starts its own fork server: a warm server would outlive the test in
                    # this mount namespace (tests/test_warm.py covers the warm server)
                    "NB2FLOW_WARM_SERVER": "off"}

    def command(self, *args: str) -> list:
        """``nb2flow ARGS`` as typed in the pod's terminal, in its home folder."""
        mounts = ["mount -t tmpfs tmpfs /run", "mount -t tmpfs tmpfs /home", f"mkdir -p {HOME}", f'mount --bind "$NB2FLOW_POD_HOME" {HOME}']
        if self.sa is not None:
            mounts += [f"mkdir -p {SA_PATH}", f'mount --bind "$NB2FLOW_POD_SA" {SA_PATH}']
        script = " && ".join(mounts) + f' && cd {HOME} && exec env -i "$@"'
        env_args = [f"{k}={v}" for k, v in self.env.items()]
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *env_args,
                sys.executable, "-m", "nb2flow", *args]

    def _outer_env(self) -> dict:
        return {"PATH": os.environ.get("PATH", ""), "NB2FLOW_POD_HOME": str(self.home), "NB2FLOW_POD_SA": str(self.sa or "")}

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), capture_output=True, text=True, timeout=timeout, env=self._outer_env())

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(self.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self._outer_env())
