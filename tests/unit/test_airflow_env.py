"""``airflow.env``: Airflow's settings, connections and variables from the inventory (values or secret
references, never generated), and the compose env_file that carries them exactly."""
import re

from provision.engine.compose import env_file
from provision.inventory import SecretRef
from provision.roles import airflow
from tests.unit.test_inventory import AIRFLOW, assert_located, error, load
from tests.unit.test_templates import context, file_at, with_airflow


def test_settings_connections_and_variables_with_secret_references(tmp_path):
    af = load(tmp_path, AIRFLOW + "      env:\n"
                                  "        AIRFLOW__CORE__PARALLELISM: 16\n"
                                  "        AIRFLOW__SMTP__SMTP_PASSWORD: {secret: smtp_password}\n"
                                  "        AIRFLOW_CONN_WAREHOUSE_DB: {env: WAREHOUSE_URI}\n"
                                  "        AIRFLOW_VAR_REPORT_RECIPIENTS: 'data@example.org, ops@example.org'\n"
              )["local"].settings.airflow
    assert af.env == (
        ("AIRFLOW__CORE__PARALLELISM", "16"),
        ("AIRFLOW__SMTP__SMTP_PASSWORD", SecretRef("secret", "smtp_password", af.env[1][1].where, "never")),
        ("AIRFLOW_CONN_WAREHOUSE_DB", SecretRef("env", "WAREHOUSE_URI", af.env[2][1].where, "never")),
        ("AIRFLOW_VAR_REPORT_RECIPIENTS", "data@example.org, ops@example.org"))
    assert af.env[1][1].where.endswith(":13 environments.local.airflow.env.AIRFLOW__SMTP__SMTP_PASSWORD")
    refs = load(tmp_path, AIRFLOW + "      env:\n        AIRFLOW_CONN_X: {secret: x_uri}\n")["local"].secret_refs()
    assert [(r.name, r.generate) for r in refs if r.name == "x_uri"] == [("x_uri", "never")]


def test_other_names_and_values_are_refused_where_they_are(tmp_path):
    env, key = AIRFLOW + "      env:\n", "environments.local.airflow.env."          # env: at line 11
    for line, problem in (("S3_BUCKET: reports", "not an Airflow setting, connection or variable"),
                          ("AIRFLOW_CONN_X: [a, b]", "expected a string, a number or a secret reference, got a list"),
                          ("AIRFLOW_VAR_X:", "has no value"),
                          ('AIRFLOW_VAR_X: "a\\0b"', "NUL"),
                          ("AIRFLOW_CONN_X: {secret: 'a-b'}", "letters, digits and underscores")):
        assert_located(error(tmp_path, f"{env}        {line}\n"), tmp_path, 12, key + line.split(":")[0], problem)
    assert "AIRFLOW_CONN_<CONN_ID>" in str(error(tmp_path, env + "        S3_BUCKET: reports\n"))


def test_compose_reads_every_value_back_exactly():
    values = [("A", "plain"), ("B", 'p@ss #1 $HOME ${X} "q" back\\slash'), ("C", "two\nlines\r"), ("D", "")]
    assert env_file(values) == (
        'A="plain"\n'
        'B="p@ss #1 \\$HOME \\${X} \\"q\\" back\\\\slash"\n'
        'C="two\\nlines\\r"\n'
        'D=""\n')


def test_the_inventorys_values_and_secrets_reach_airflow_env_as_data():
    ctx = with_airflow(context(), env=(("AIRFLOW_VAR_GREETING", 'hi #1 $HOME "you"\nAIRFLOW__CORE__FERNET_KEY=x'),
                                       ("AIRFLOW_CONN_WAREHOUSE", SecretRef("secret", "wh", "", "never"))))
    ctx = type(ctx)(**{**ctx.__dict__, "secrets": {**ctx.secrets, "wh": "postgresql://u:p%40ss@db:5432/wh"}})
    text = file_at(airflow.resources(ctx), "/srv/airflow/airflow.env").content.decode()
    assert text.endswith('AIRFLOW_VAR_GREETING="hi #1 \\$HOME \\"you\\"\\nAIRFLOW__CORE__FERNET_KEY=x"\n'
                         'AIRFLOW_CONN_WAREHOUSE="postgresql://u:p%40ss@db:5432/wh"\n')
    assert len(re.findall(r"^AIRFLOW__CORE__FERNET_KEY=", text, re.M)) == 1


def test_what_dropship_wires_is_set_through_its_own_key(tmp_path):
    env = AIRFLOW + "      env:\n        AIRFLOW__CORE__PARALLELISM: 64\n"       # sized: the inventory's wins
    assert load(tmp_path, env)["local"].settings.airflow.env == (("AIRFLOW__CORE__PARALLELISM", "64"),)
    assert_located(error(tmp_path, env + "        AIRFLOW__CORE__EXECUTOR: KubernetesExecutor\n"), tmp_path, 13,
                   "environments.local.airflow.env.AIRFLOW__CORE__EXECUTOR", "is set by Dropship",
                   "remove it: set airflow.executor")
    assert_located(error(tmp_path, env + "        AIRFLOW__CORE__DAGS_FOLDER: /opt/dags\n"), tmp_path, 13,
                   "environments.local.airflow.env.AIRFLOW__CORE__DAGS_FOLDER", "set airflow.dags")
