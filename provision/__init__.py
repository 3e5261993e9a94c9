"""Dropship: provisioning and deploy automation for Flask + Airflow droplets."""
