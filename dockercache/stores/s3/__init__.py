"""The S3 store: keys and trust (:mod:`.store`), the native ``type=s3`` kind (:mod:`.native`), the object
layout (:mod:`.layout`), snapshots and blob store (:mod:`.snapshots`), the boto3 client (:mod:`.client`), and the
loopback registry endpoint through which BuildKit reads and writes it (:mod:`.endpoint`, :mod:`.endpoint_http`)."""
