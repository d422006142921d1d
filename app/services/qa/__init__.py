"""Call quality inspection (质检): scoring rules, the machine's checks on transcripts, sampling plans and
the inspection / appeal workflow. Pure services: they take a session, ids and `now`; callers commit unless
a function says otherwise."""
