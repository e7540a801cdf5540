"""The commented example scenario file that ``jsd sim scenario --example`` prints (jsd_sim.scenarios reads
files of this shape); kept apart so the loader's module holds code only."""

EXAMPLE_TOML = """\
# jsd sim scenario FILE: steps against a Join Server whose devices are already provisioned.
name = "smoke"
js_url = "http://127.0.0.1:8003/lbi"
home = "home"                      # the devices' home network server (below)
devices_csv = "devices.csv"        # dev_eui,join_eui,mac_version,app_key,nwk_key (relative to this file)
concurrency = 8                    # devices in flight per step

[network_servers.home]
net_id = "000013"
token_env = "JSD_SIM_TOKEN_HOME"   # or token = "..." (keep secrets out of shared files)
kek_label = "ns-000013"
kek_env = "JSD_SIM_KEK_HOME"       # or kek = "<32 hex>"
async = false                      # true: listen for asynchronous answers

[network_servers.visited]          # registered with the Join Server, but not the devices' home
net_id = "000042"
token_env = "JSD_SIM_TOKEN_VISITED"

[astks]                            # ASTKs the simulated application server holds, by label
# "astk-acme-1" = "<32 hex>"

[[steps]]
kind = "join"
[[steps]]
kind = "replay"                    # expects JoinReqFailed
[[steps]]
kind = "wrong_key"                 # expects MICFailed
[[steps]]
kind = "join"
[[steps]]
kind = "wrong_net_id"              # home token, another SenderID: expects UnknownSender
[[steps]]
kind = "wrong_net_id"
ns = "visited"                     # expects ActivationDisallowed
[[steps]]
kind = "join"
versions = ["1.1"]
mac_version = "1.0.3"              # a 1.1 device on a 1.0 network server
[[steps]]
kind = "join"
versions = ["1.1"]
[[steps]]
kind = "rejoin"
type = 0
[[steps]]
kind = "rejoin"
type = 1
[[steps]]
kind = "rejoin"
type = 2
[[steps]]
kind = "home_ns"
ns = "visited"
[[steps]]
kind = "app_s_key"
expect = ["Success"]               # any step: the Result code(s) it must get
"""
