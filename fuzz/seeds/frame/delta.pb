
metrics*
us|latency