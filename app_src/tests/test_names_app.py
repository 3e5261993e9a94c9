"""The names page, the form and the health check, against the real test database."""
import re

from sqlalchemy import text

from names.models import Name

TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def names_on(page):
    return re.findall(r"<li>(.*?)</li>", page)


def test_index_shows_heading_and_form(client):
    page = client.get("/").get_data(as_text=True)
    assert "<h1>Hello World!</h1>" in page
    assert '<form method="post"' in page and 'name="name"' in page
    assert "No names yet." in page


def test_post_stores_name_and_redirects(client, database):
    response = client.post("/", data={"name": "  Ada Lovelace "})
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert [n.name for n in database.session.scalars(database.select(Name))] == ["Ada Lovelace"]
    assert names_on(client.get("/").get_data(as_text=True)) == ["Ada Lovelace"]


def test_names_listed_in_order_of_entry(client):
    for name in ["Zoe", "Ada", "Mia"]:
        assert client.post("/", data={"name": name}).status_code == 302
    assert names_on(client.get("/").get_data(as_text=True)) == ["Zoe", "Ada", "Mia"]


def test_names_are_escaped(client):
    client.post("/", data={"name": "<b>Bob</b>"})
    assert names_on(client.get("/").get_data(as_text=True)) == ["&lt;b&gt;Bob&lt;/b&gt;"]


def test_empty_name_rejected(client, database):
    for value in ["", "   "]:
        response = client.post("/", data={"name": value})
        assert response.status_code == 200
        assert "This field is required." in response.get_data(as_text=True)
    assert database.session.scalar(database.select(database.func.count(Name.id))) == 0


def test_too_long_name_rejected(client, database):
    response = client.post("/", data={"name": "x" * 65})
    assert response.status_code == 200
    assert "Field must be between 1 and 64 characters long." in response.get_data(as_text=True)
    assert client.post("/", data={"name": "x" * 64}).status_code == 302
    assert database.session.scalar(database.select(database.func.count(Name.id))) == 1


def test_duplicate_name_rejected(client):
    assert client.post("/", data={"name": "Ada"}).status_code == 302
    response = client.post("/", data={"name": "Ada"})
    assert "That name is already on the list." in response.get_data(as_text=True)
    assert names_on(response.get_data(as_text=True)) == ["Ada"]


def test_csrf_enforced_in_staging(make_app):
    client = make_app("staging", SECRET_KEY="staging-secret").test_client()
    assert client.post("/", data={"name": "Eve"}).status_code == 400
    assert client.post("/", data={"name": "Eve", "csrf_token": "forged"}).status_code == 400

    token = TOKEN.search(client.get("/").get_data(as_text=True)).group(1)
    response = client.post("/", data={"name": "Eve", "csrf_token": token}, follow_redirects=True)
    assert response.status_code == 200
    assert names_on(response.get_data(as_text=True)) == ["Eve"]


def test_healthz_ok(make_app):
    client = make_app("testing", RELEASE_ID="20260101-abc123").test_client()
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "release": "20260101-abc123"}


def test_healthz_release_defaults_to_dev(client):
    assert client.get("/healthz").get_json() == {"status": "ok", "release": "dev"}


def test_healthz_503_when_database_unreachable(monkeypatch, free_port):
    from names import create_app

    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port}/names")
    monkeypatch.setenv("RELEASE_ID", "r2")
    response = create_app("testing").test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "error" and body["release"] == "r2"


def test_database_fixture_is_the_migrated_postgres(database):
    assert database.session.execute(text("SELECT version()")).scalar().startswith("PostgreSQL")
