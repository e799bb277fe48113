"""Tools around the daemon, not part of it: a simulated correlator (:mod:`.simulate`)
and the end-to-end demo (:mod:`.demo`). The daemon never imports them."""
