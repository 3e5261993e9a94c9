"""System resources: packages, users, groups, services, timezone, swap, ufw, downloads (pure + local shell)."""
import os
import subprocess

import pytest

from provision.engine.system import (
    APT_INSTALL, Download, Firewall, GroupMember, Packages, Service, Swapfile, Timezone, User, systemd_word,
)

# --- Packages -----------------------------------------------------------------------------------

DPKG_QUERY = """\
sudo ii 
curl ii 
nginx rc 
ufw un 
libc6:amd64 ii 
docker.io hi 
fail2ban iU 
"""


def test_packages_parse_only_installed():
    installed = Packages(()).parse(DPKG_QUERY)
    assert installed == {"sudo", "curl", "libc6", "docker.io"}


def test_packages_parse_ignores_noise():
    assert Packages(()).parse("\n  \nweird\n") == set()


def test_packages_probe_queries_every_name_and_never_fails():
    probe = Packages(("nginx", "docker.io")).probe()
    assert "dpkg-query -W" in probe and probe.endswith("nginx docker.io 2>/dev/null; true")


def test_packages_plan_nothing_when_all_installed():
    assert Packages(("sudo", "curl")).plan({"sudo", "curl", "vim"}) == []


def test_packages_plan_one_transaction_with_only_missing():
    pkgs = Packages(("sudo", "nginx", "curl", "ufw"), role="packages")
    [change] = pkgs.plan(Packages(()).parse(DPKG_QUERY))
    assert change.action == "install"
    assert change.summary == "install nginx ufw"
    assert change.commands == [
        "export DEBIAN_FRONTEND=noninteractive",
        "apt-get update -q -o DPkg::Lock::Timeout=300",
        f"{APT_INSTALL} nginx ufw",
    ]
    assert "--no-install-recommends" in APT_INSTALL and "-y" in APT_INSTALL


# --- User, GroupMember --------------------------------------------------------------------------

def test_user_parse():
    assert User("deploy").parse("deploy:x:1000:1000::/home/deploy:/bin/bash\n") == \
        {"home": "/home/deploy", "shell": "/bin/bash"}
    assert User("deploy").parse("") is None


def test_user_plan():
    user = User("deploy")
    [create] = user.plan(None)
    assert create.commands == ["useradd --create-home --user-group --shell /bin/bash deploy"]
    [update] = user.plan({"home": "/home/deploy", "shell": "/bin/sh"})
    assert update.commands == ["usermod --shell /bin/bash deploy"]
    assert user.plan({"home": "/home/deploy", "shell": "/bin/bash"}) == []


def test_group_member():
    member = GroupMember("deploy", "docker")
    assert member.parse("deploy sudo docker\n") == {"deploy", "sudo", "docker"}
    assert member.plan({"deploy", "docker"}) == []
    [change] = member.plan(member.parse(""))
    assert change.commands == ["usermod -aG docker deploy"]


# --- Service ------------------------------------------------------------------------------------

def service_facts(load, unit_file, active):
    return Service("nginx").parse(f"LoadState={load}\nUnitFileState={unit_file}\nActiveState={active}\n")


def test_service_parse():
    assert service_facts("loaded", "enabled", "active") == \
        {"LoadState": "loaded", "UnitFileState": "enabled", "ActiveState": "active"}


def test_service_enabled_and_active_needs_nothing():
    assert Service("nginx").plan(service_facts("loaded", "enabled", "active")) == []


def test_service_disabled_and_inactive_is_enabled_and_started():
    [change] = Service("nginx").plan(service_facts("loaded", "disabled", "inactive"))
    assert (change.action, change.summary, change.commands, change.service) == \
        ("start", "enable and start nginx", ["systemctl enable --now nginx"], "nginx")


def test_service_not_found_is_enabled_and_started():
    [change] = Service("nginx").plan(service_facts("not-found", "", "inactive"))
    assert change.commands == ["systemctl enable --now nginx"]


def test_service_static_unit_is_only_started():
    [change] = Service("nginx").plan(service_facts("loaded", "static", "inactive"))
    assert (change.action, change.commands, change.service) == ("start", ["systemctl start nginx"], "nginx")


def test_service_enabled_but_inactive_is_started():
    [change] = Service("nginx").plan(service_facts("loaded", "enabled", "failed"))
    assert change.commands == ["systemctl start nginx"]


def test_service_active_but_disabled_is_only_enabled():
    [change] = Service("nginx").plan(service_facts("loaded", "disabled", "active"))
    assert (change.action, change.summary, change.service) == ("enable", "enable nginx", "")


def test_service_with_no_systemctl_output():
    [change] = Service("nginx").plan(Service("nginx").parse(""))
    assert change.commands == ["systemctl enable --now nginx"]


# --- Timezone -----------------------------------------------------------------------------------

def test_timezone_parse_and_match():
    tz = Timezone("Europe/Berlin")
    facts = tz.parse("/usr/share/zoneinfo/Europe/Berlin\nEurope/Berlin")
    assert facts == ("Europe/Berlin", "Europe/Berlin")
    assert tz.plan(facts) == []


def test_timezone_change():
    tz = Timezone("Europe/Berlin")
    [change] = tz.plan(tz.parse("/usr/share/zoneinfo/Etc/UTC\nEtc/UTC"))
    assert change.commands[1:] == ["ln -sfn /usr/share/zoneinfo/Europe/Berlin /etc/localtime",
                                   "echo Europe/Berlin > /etc/timezone"]
    assert change.commands[0].startswith("[ -e /usr/share/zoneinfo/Europe/Berlin ] ||")


def test_timezone_without_etc_timezone_file_is_rewritten():
    tz = Timezone("UTC")
    assert tz.parse("/usr/share/zoneinfo/UTC") == ("UTC", "")
    assert len(tz.plan(tz.parse("/usr/share/zoneinfo/UTC"))) == 1


# --- Swapfile -----------------------------------------------------------------------------------

def swap_facts(virt="none", size=0, active=0, fstab=0):
    return Swapfile(1).parse(f"virt={virt}\nsize={size}\nactive={active}\nfstab={fstab}\n")


def test_swap_in_container_is_a_skip_change():
    [change] = Swapfile(2048).plan(swap_facts(virt="docker"))
    assert change.skipped and change.commands == []
    assert "docker" in change.summary


def test_swap_zero_size_plans_nothing():
    assert Swapfile(0).plan(swap_facts()) == []


def test_swap_in_place_plans_nothing():
    assert Swapfile(2048).plan(swap_facts(size=2048 * 1024 * 1024, active=1, fstab=1)) == []


def test_swap_missing_is_created():
    [change] = Swapfile(1024).plan(swap_facts())
    assert change.action == "create"
    assert change.commands == [
        "swapoff /swapfile 2>/dev/null || true",
        "rm -f /swapfile",
        "fallocate -l 1024M /swapfile || dd if=/dev/zero of=/swapfile bs=1M count=1024",
        "chmod 600 /swapfile",
        "mkswap /swapfile >/dev/null",
        "swapon /swapfile",
        "grep -q '^/swapfile ' /etc/fstab || echo '/swapfile none swap sw 0 0' >> /etc/fstab",
    ]


def test_swap_wrong_size_is_recreated():
    [change] = Swapfile(2048).plan(swap_facts(size=1024 * 1024 * 1024, active=1, fstab=1))
    assert change.action == "create"
    assert any(c.startswith("fallocate -l 2048M") for c in change.commands)


def test_swap_right_size_but_off_is_only_switched_on():
    [change] = Swapfile(1024).plan(swap_facts(size=1024 * 1024 * 1024, active=0, fstab=0))
    assert change.action == "update"
    assert not any("mkswap" in c or "fallocate" in c for c in change.commands)
    assert "swapon /swapfile" in change.commands
    assert change.commands[-1].endswith(">> /etc/fstab")


def test_swap_probe_runs_on_this_machine():
    facts = Swapfile(1, path="/nonexistent-swap").parse(
        subprocess.run(["/bin/sh", "-c", Swapfile(1, path="/nonexistent-swap").probe()],
                       capture_output=True, text=True, timeout=30).stdout)
    if facts["virt"] != "none":          # in a container the probe stops at the virt check
        assert set(facts) == {"virt"} and Swapfile(1).plan(facts)[0].skipped
    else:
        assert set(facts) == {"virt", "size", "active", "fstab"}
        assert (facts["size"], facts["active"]) == ("0", "0")


# --- Firewall -----------------------------------------------------------------------------------

UFW_CONF = """\
# /etc/ufw/ufw.conf
#

# Set to yes to start on boot. If setting this remotely, be sure to add a rule
# to allow your remote connection before starting ufw. Eg: 'ufw allow 22/tcp'
ENABLED=yes

# Please use the 'ufw' command to set the loglevel. Eg: 'ufw logging medium'.
# See 'man ufw' for details.
LOGLEVEL=low
"""

DEFAULT_UFW = """\
# /etc/default/ufw
#

# Set to yes to apply rules to support IPv6 (no means only IPv6 on loopback
# accepted). You will need to 'disable' and then 'enable' the firewall for
# the changes to take affect.
IPV6=yes

# Set the default input policy to ACCEPT, DROP, or REJECT. Please note that if
# you change this you will most likely want to adjust your rules.
DEFAULT_INPUT_POLICY="DROP"

# Set the default output policy to ACCEPT, DROP, or REJECT. Please note that if
# you change this you will most likely want to adjust your rules.
DEFAULT_OUTPUT_POLICY="ACCEPT"

# Set the default forward policy to ACCEPT, DROP or REJECT.  Please note that
# if you change this you will most likely want to adjust your rules
DEFAULT_FORWARD_POLICY="DROP"
"""

USER_RULES = """\
*filter
:ufw-user-input - [0:0]
:ufw-user-output - [0:0]
:ufw-user-forward - [0:0]
:ufw-before-logging-input - [0:0]
:ufw-user-limit - [0:0]
:ufw-user-limit-accept - [0:0]
### RULES ###

### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in
-A ufw-user-input -p tcp --dport 22 -j ACCEPT

### tuple ### allow tcp 80 0.0.0.0/0 any 0.0.0.0/0 in
-A ufw-user-input -p tcp --dport 80 -j ACCEPT

### tuple ### allow udp 53 0.0.0.0/0 any 0.0.0.0/0 in
-A ufw-user-input -p udp --dport 53 -j ACCEPT

### tuple ### deny tcp 25 0.0.0.0/0 any 0.0.0.0/0 in
-A ufw-user-input -p tcp --dport 25 -j DROP

### END RULES ###

### LOGGING ###
-A ufw-after-logging-input -j LOG --log-prefix "[UFW BLOCK] " -m limit --limit 3/min --limit-burst 10
### END LOGGING ###
COMMIT
"""


def probe_ufw_files(tmp_path, ufw_conf=UFW_CONF, default=DEFAULT_UFW, rules=USER_RULES) -> dict:
    """Run Firewall's own probe against real-format ufw files laid out under tmp_path."""
    (tmp_path / "etc/ufw").mkdir(parents=True)
    (tmp_path / "etc/default").mkdir(parents=True)
    (tmp_path / "etc/ufw/ufw.conf").write_text(ufw_conf)
    (tmp_path / "etc/default/ufw").write_text(default)
    (tmp_path / "etc/ufw/user.rules").write_text(rules)
    fw = Firewall(())
    probe = fw.probe().replace("/etc/", f"{tmp_path}/etc/").replace("iptables ", "false ")
    out = subprocess.run(["/bin/sh", "-c", probe], capture_output=True, text=True, timeout=30).stdout
    return fw.parse(out)


def test_firewall_parses_real_ufw_files(tmp_path):
    facts = probe_ufw_files(tmp_path)
    assert facts == {"ENABLED": "yes", "DEFAULT_INPUT_POLICY": "DROP", "DEFAULT_OUTPUT_POLICY": "ACCEPT",
                     "rules": {"22/tcp", "80/tcp", "53/udp"}}


def test_firewall_parses_probe_output_with_loaded_rules():
    facts = Firewall(()).parse('ENABLED=yes\nDEFAULT_INPUT_POLICY="DROP"\nDEFAULT_OUTPUT_POLICY="ACCEPT"\n'
                               "### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\nLOADED=yes\n")
    assert facts["rules"] == {"22/tcp"} and facts["LOADED"] == "yes"


def good_facts(rules=("22/tcp", "80/tcp", "443/tcp"), **kw):
    facts = {"ENABLED": "yes", "DEFAULT_INPUT_POLICY": "DROP", "DEFAULT_OUTPUT_POLICY": "ACCEPT",
             "LOADED": "yes", "rules": set(rules)}
    facts.update(kw)
    return facts


FW = Firewall(("22/tcp", "80/tcp", "443/tcp"))


def test_firewall_in_place_plans_nothing():
    assert FW.plan(good_facts()) == []


def test_firewall_missing_rule_is_allowed():
    [change] = FW.plan(good_facts(rules=("22/tcp", "80/tcp")))
    assert change.commands == ["ufw allow 443/tcp >/dev/null", "ufw --force enable >/dev/null"]


def test_firewall_extra_rule_is_deleted():
    [change] = FW.plan(good_facts(rules=("22/tcp", "80/tcp", "443/tcp", "8080/tcp", "53/udp")))
    assert change.commands == ["ufw delete allow 53/udp >/dev/null", "ufw delete allow 8080/tcp >/dev/null",
                               "ufw --force enable >/dev/null"]


def test_firewall_disabled_is_enabled():
    [change] = FW.plan(good_facts(ENABLED="no"))
    assert change.commands == ["ufw --force enable >/dev/null"]


def test_firewall_rules_not_loaded_is_enabled():
    facts = good_facts()
    del facts["LOADED"]
    assert FW.plan(facts)[0].commands == ["ufw --force enable >/dev/null"]


def test_firewall_fresh_install(tmp_path):
    facts = probe_ufw_files(tmp_path, ufw_conf="ENABLED=no\n", default='DEFAULT_INPUT_POLICY="ACCEPT"\n', rules="")
    [change] = FW.plan(facts)
    assert change.commands == [
        "ufw default deny incoming >/dev/null", "ufw default allow outgoing >/dev/null",
        "ufw allow 22/tcp >/dev/null", "ufw allow 80/tcp >/dev/null", "ufw allow 443/tcp >/dev/null",
        "ufw --force enable >/dev/null",
    ]
    assert change.summary == "firewall: deny inbound, allow 22/tcp, 80/tcp, 443/tcp"


# --- Download -----------------------------------------------------------------------------------

def test_download_parse_and_plan():
    dl = Download("https://download.docker.com/linux/debian/gpg", "/etc/apt/keyrings/docker.asc")
    assert dl.parse("present\n") is True and dl.parse("absent\n") is False
    assert dl.plan(True) == []
    [change] = dl.plan(False)
    assert change.commands[1] == 'curl -fsSL --retry 3 https://download.docker.com/linux/debian/gpg -o "$tmp" || { rm -f "$tmp"; exit 1; }'


@pytest.mark.skipif(not os.path.exists("/usr/bin/curl"), reason="needs curl")
def test_download_executes_atomically_from_a_file_url(tmp_path):
    source = tmp_path / "key.asc"
    source.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n")
    (tmp_path / "keyrings").mkdir()
    dl = Download(f"file://{source}", str(tmp_path / "keyrings" / "docker.asc"), mode=0o644)
    run = lambda script: subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,  # noqa: E731
                                        timeout=30)
    assert dl.parse(run(dl.probe()).stdout) is False
    result = run("( set -e\n" + "\n".join(dl.plan(False)[0].commands) + "\n)")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "keyrings" / "docker.asc").read_text() == source.read_text()
    assert os.stat(tmp_path / "keyrings" / "docker.asc").st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path / "keyrings") == ["docker.asc"]
    assert dl.parse(run(dl.probe()).stdout) is True


def test_firewall_rules_to_one_address_of_the_host():
    from provision.engine.system import Firewall, ufw_rule_args

    rule = "5432/tcp from 172.16.0.0/12 to 172.17.0.1"
    assert ufw_rule_args(rule) == "proto tcp from 172.16.0.0/12 to 172.17.0.1 port 5432"
    assert ufw_rule_args("6379/tcp from 10.110.0.3") == "proto tcp from 10.110.0.3 to any port 6379"
    facts = Firewall((rule,)).parse("### tuple ### allow tcp 5432 172.17.0.1 any 172.16.0.0/12 in\n"
                                    "### tuple ### allow tcp 6379 0.0.0.0/0 any 10.110.0.3 in\n")
    assert facts["rules"] == {rule, "6379/tcp from 10.110.0.3"}


def test_systemd_word_exact():
    assert systemd_word("wsgi:app") == "wsgi:app"
    assert systemd_word("shop:create_app()") == "shop:create_app()"
    assert systemd_word("shop:create_app('production')") == "\"shop:create_app('production')\""
    assert systemd_word('shop:create_app("a b", debug=False)') == '"shop:create_app(\\"a b\\", debug=False)"'
    assert systemd_word("a\\b;c") == '"a\\\\b;c"'
    assert systemd_word("%h$HOME") == "%%h$$HOME"        # no specifier, no variable
