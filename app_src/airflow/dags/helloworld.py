"""Helloworld: the classic getting-started DAG, in Airflow 3 style.

task_1 runs first, then task_2, task_3 and task_4 in parallel; each echoes a greeting.
"""
from __future__ import annotations

import pendulum

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="Helloworld",
    schedule="@daily",
    start_date=pendulum.datetime(2015, 6, 1, tz="UTC"),
    catchup=False,
    default_args={"owner": "airflow", "retries": 0},
    tags=["example"],
) as dag:
    tasks = [
        BashOperator(task_id=f"task_{n}", bash_command=f'echo "Hello World from Task {n}"')
        for n in range(1, 5)
    ]
    tasks[0] >> tasks[1:]
