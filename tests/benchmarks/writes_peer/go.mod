module kubehull.local/bench/writes_peer

go 1.26
