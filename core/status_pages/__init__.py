"""Status pages: CRUD, the public projection (JSON, HTML, Atom), password
unlock, e-mail subscriptions and badges."""
