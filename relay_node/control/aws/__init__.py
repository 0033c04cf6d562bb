"""The relay's AWS side, all off unless configured: its Route 53 records, its CloudWatch metric,
its public address, and the sweeper for records of nodes that died uncleanly.

Every AWS call goes through boto3 with the SDK's own configuration: credentials, region and
endpoints (``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_ROUTE53`` / ``AWS_ENDPOINT_URL_CLOUDWATCH`` /
``AWS_ENDPOINT_URL_EC2``), so the same code runs against LocalStack with no flag of its own.
Blocking boto3 calls run in a worker thread (``asyncio.to_thread``), never on the event loop.

The sweep of records of nodes that died uncleanly: which are stale (``staleness``, pure), the
periodic run every relay with Route 53 names takes part in, one at a time under a Redis lock
(``sweeper``), and the same at once by hand (``sweep``).

Import the submodules (``node``, ``route53``, ``metrics``, ``discovery``, ``sweeper``) directly: this
package's ``__init__`` imports nothing, so the relay's settings (``settings``) load without boto3.
"""
