"""The Spark session both scripts use: local, Delta Lake's extension and catalog (the jars in
LAKELOAD_SPARK_JARS, passed by run.sh), UTC, loopback only, small shuffles, no UI; with
LAKELOAD_SPARK_S3_ENDPOINT, Hadoop's S3A pointed at that S3-compatible server (path-style,
plain HTTP, the AWS_* keys of the environment) for tables named s3a://bucket/path."""

import os


def delta_session(app_name):
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.appName(app_name)
        .master(os.environ.get("LAKELOAD_SPARK_MASTER", "local[2]"))
        .config("spark.jars", os.environ.get("LAKELOAD_SPARK_JARS", ""))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.driver.memory", "1g")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
    )
    endpoint = os.environ.get("LAKELOAD_SPARK_S3_ENDPOINT")
    if endpoint:
        s3a = {
            "fs.s3a.endpoint": endpoint,
            "fs.s3a.path.style.access": "true",
            "fs.s3a.connection.ssl.enabled": "false",
            "fs.s3a.access.key": os.environ["AWS_ACCESS_KEY_ID"],
            "fs.s3a.secret.key": os.environ["AWS_SECRET_ACCESS_KEY"],
            "fs.s3a.endpoint.region": os.environ.get("AWS_REGION", "us-east-1"),
            "fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        }
        for key, value in s3a.items():
            spark = spark.config("spark.hadoop." + key, value)
    spark = spark.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark
