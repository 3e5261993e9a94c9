"""Certificates nginx serves: a placeholder until the real one exists, and one obtained with
certbot's webroot flow (HTTP-01 answered by the running nginx). Command builders are pure."""
from __future__ import annotations

from dataclasses import dataclass

from .nginx import checked_reload
from .model import PHASE_CONFIG, PHASE_SERVICES, Change, Resource, q

LIVE = "/etc/letsencrypt/live"
LIVE_MARK = "live"          # in a certificate folder: the real certificate is in place (port 80 redirects)


def ca_env(ca_bundle: str) -> str:
    """certbot trusts ``ca_bundle`` for the ACME server (a test server's own CA); "" = the system's."""
    return f"REQUESTS_CA_BUNDLE={q(ca_bundle)} " if ca_bundle else ""


def certbot_command(cert_name: str, names: tuple[str, ...], webroot: str, server: str, email: str,
                    ca_bundle: str = "", force: bool = False) -> str:
    """``certbot certonly`` through the webroot, non-interactive; a fresh lineage or one whose names
    changed is issued, one already valid for these names is kept (``force``: a server change)."""
    domains = " ".join(f"-d {q(n)}" for n in names)
    account = f"--email {q(email)} --no-eff-email" if email else "--register-unsafely-without-email"
    keep = "--force-renewal" if force else "--keep-until-expiring"
    return (f"{ca_env(ca_bundle)}certbot certonly --non-interactive --agree-tos {account} --webroot -w {q(webroot)} "
            f"--cert-name {q(cert_name)} {domains} --server {q(server)} {keep} --quiet")


def link_command(cert_name: str, folder: str) -> str:
    """Point nginx's files at certbot's lineage, reload nginx, then mark the folder live (from then
    on port 80 redirects: the certificate that answers HTTPS is the real one)."""
    live = f"{LIVE}/{cert_name}"
    return (f"ln -sfn {q(live + '/fullchain.pem')} {q(folder + '/fullchain.pem')}\n"
            f"ln -sfn {q(live + '/privkey.pem')} {q(folder + '/privkey.pem')}\n"
            f"{checked_reload()}\n"
            f"touch {q(folder + '/' + LIVE_MARK)}")


def placeholder_command(folder: str, name: str) -> str:
    """A self-signed key and certificate so nginx can load the HTTPS server before the real one exists."""
    return (f"openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj {q('/CN=' + name)} "
            f"-keyout {q(folder + '/privkey.pem')} -out {q(folder + '/fullchain.pem')} 2>/dev/null\n"
            f"chmod 600 {q(folder + '/privkey.pem')}")


def names_probe(cert: str) -> str:
    """The DNS names of the certificate at ``cert``, sorted, one line (nothing when it does not exist)."""
    return (f"openssl x509 -in {q(cert)} -noout -ext subjectAltName 2>/dev/null | tr ',' '\\n' | "
            f"sed -n 's/^ *DNS://p' | sort | tr '\\n' ' '")


@dataclass(frozen=True)
class Placeholder(Resource):
    """``folder``/fullchain.pem and privkey.pem exist (a self-signed pair if nothing else is there)."""

    folder: str
    name: str
    role: str = ""
    phase: int = PHASE_CONFIG

    @property
    def key(self) -> str:
        return f"certificate files {self.folder}"

    @property
    def writes(self) -> tuple[str, ...]:
        return (f"{self.folder}/fullchain.pem", f"{self.folder}/privkey.pem")

    def probe(self, want_content: bool = False) -> str:
        f = q(self.folder)
        return f"[ -e {f}/fullchain.pem ] && [ -e {f}/privkey.pem ] && echo present || true"

    def plan(self, facts: str) -> list[Change]:
        if facts.strip() == "present":
            return []
        return [self.change("create", f"placeholder certificate for {self.name} (until the real one is issued)",
                            [placeholder_command(self.folder, self.name)])]


@dataclass(frozen=True)
class Certificate(Resource):
    """An ACME certificate for ``names`` in certbot's lineage ``cert_name``, linked into ``folder``.

    Runs after nginx has loaded the site (the challenge location), so validation reaches it."""

    cert_name: str
    names: tuple[str, ...]
    folder: str
    webroot: str
    server: str
    email: str = ""
    ca_bundle: str = ""
    role: str = ""
    phase: int = PHASE_SERVICES

    @property
    def key(self) -> str:
        return f"certificate {self.cert_name}"

    @property
    def writes(self) -> tuple[str, ...]:
        """The links into certbot's lineage and the live mark (certificates given as secrets were
        files there: switching to ACME keeps them until the links replace them)."""
        return (f"{self.folder}/fullchain.pem", f"{self.folder}/privkey.pem", f"{self.folder}/{LIVE_MARK}")

    def probe(self, want_content: bool = False) -> str:
        live, f = f"{LIVE}/{self.cert_name}", q(self.folder)
        return (f"echo \"names=$({names_probe(live + '/cert.pem')})\"\n"
                f"echo \"server=$(sed -n 's/^server *= *//p' {q('/etc/letsencrypt/renewal/' + self.cert_name + '.conf')}"
                f" 2>/dev/null)\"\n"
                f"echo \"linked=$(readlink {f}/fullchain.pem)\"\n"
                f"[ -e {f}/{LIVE_MARK} ] && echo live=1; true")

    def parse(self, output: str) -> dict:
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)

    def plan(self, facts: dict) -> list[Change]:
        names = facts.get("names", "").split()
        issued = sorted(names) == sorted(self.names)
        same_server = facts.get("server", "").strip() == self.server
        linked = facts.get("linked", "") == f"{LIVE}/{self.cert_name}/fullchain.pem" and facts.get("live") == "1"
        if issued and same_server and linked:
            return []
        what = "obtain" if not names else ("re-issue" if not issued or not same_server else "link")
        return [self.change(
            "create" if not names else "update", f"{what} the certificate for {' '.join(self.names)} ({self.server})",
            [certbot_command(self.cert_name, self.names, self.webroot, self.server, self.email, self.ca_bundle,
                             force=bool(names) and issued and not same_server),
             link_command(self.cert_name, self.folder)],
            fix=f"point the DNS name(s) {' '.join(self.names)} at this droplet and let port 80 in, then re-run "
                "provision (the site keeps serving over HTTP until the certificate is issued)")]


LINEAGE = "@lineage "        # a probe line: certbot's lineage of a certificate given as secrets


def renewal_conf(cert_name: str) -> str:
    return f"/etc/letsencrypt/renewal/{cert_name}.conf"


def lineage_delete_command(cert_name: str) -> str:
    """certbot's lineage ``cert_name`` deleted (not renewed any more), when there is one."""
    return (f"if [ -e {q(renewal_conf(cert_name))} ]; then "
            f"certbot delete --non-interactive --quiet --cert-name {q(cert_name)}; fi")


def retire_command(cert_name: str, folder: str, snippet: str) -> str:
    """Forget a certificate the host no longer serves: certbot's lineage (so it is not renewed), the
    folder nginx read it from (private key included) and the server snippet that named it."""
    return f"{lineage_delete_command(cert_name)}\nrm -rf {q(folder)}\nrm -f {q(snippet)}"


@dataclass(frozen=True)
class RetiredCertificates(Resource):
    """No certificate folder under ``tls_dir`` but those of ``keep`` (the certificate names the host
    serves): one left by a server that moved to the load balancer, turned ``tls: off`` or was renamed
    is removed with its certbot lineage. A certificate of ``custom`` (given as secrets) keeps its
    folder but loses the lineage it had from ACME, which would go on being renewed. Runs after nginx
    has reloaded without them."""

    tls_dir: str
    snippets: str                      # the folder of the servers' snippets, tls-<name>.conf
    keep: tuple[str, ...] = ()
    role: str = ""
    phase: int = PHASE_SERVICES
    custom: tuple[str, ...] = ()       # of ``keep``: the certificates given as secrets

    @property
    def key(self) -> str:
        return f"retired certificates in {self.tls_dir}"

    def probe(self, want_content: bool = False) -> str:
        lineages = "".join(f"\n[ -e {q(renewal_conf(n))} ] && echo {q(LINEAGE + n)}" for n in self.custom)
        return f"ls -1 {q(self.tls_dir)} 2>/dev/null{lineages}; true"

    def plan(self, facts: str) -> list[Change]:
        lines = facts.splitlines()
        lineages = [n[len(LINEAGE):] for n in lines if n.startswith(LINEAGE)]
        gone = [n for n in lines if n and not n.startswith(LINEAGE) and n not in self.keep and "/" not in n
                and n not in (".", "..")]
        return [self.change("remove", f"remove the certificate for {n} (no server here has HTTPS for it)",
                            [retire_command(n, f"{self.tls_dir}/{n}", f"{self.snippets}/tls-{n}.conf")])
                for n in gone] + \
               [self.change("remove", f"delete certbot's lineage of {n} (its certificate is given as secrets now; "
                            "nothing renews it)", [lineage_delete_command(n)]) for n in lineages if n in self.custom]
