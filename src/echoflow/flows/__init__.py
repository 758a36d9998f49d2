"""Prefect flows. Entrypoints for deployments:

- echoflow.flows.convert:convert_raw_sonar   one raw file
- echoflow.flows.batch:convert_batch         many files, bounded process parallelism
- echoflow.flows.cruise:convert_cruise       a cruise fanned out as child runs (one Job each)
"""
