"""The S3 store: the kind (:mod:`.store`), its keys and trust (:mod:`.keys`) and its run (:mod:`.runtime`); the
native ``type=s3`` kind (:mod:`.native`), the object layout (:mod:`.layout`), snapshots and blob store
(:mod:`.snapshots`), the boto3 client (:mod:`.client`), and the loopback registry endpoint through which BuildKit
reads and writes it (:mod:`.endpoint`, built on :mod:`.endpoint_access`, :mod:`.endpoint_holdings` and
:mod:`.endpoint_saves`; HTTP in :mod:`.endpoint_http`, uploads in :mod:`.endpoint_uploads`)."""
