import time
def test_sleep(client):
    time.sleep(60)
