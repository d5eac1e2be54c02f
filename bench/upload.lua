-- wrk script of the upload scenario: POSTs a body of UPLOAD_BYTES bytes (default 10 MiB).
local size = tonumber(os.getenv("UPLOAD_BYTES") or "10485760")
wrk.method = "POST"
wrk.body = string.rep("u", size)
wrk.headers["Content-Type"] = "application/octet-stream"
