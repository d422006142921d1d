"""The SMS platform's services: providers, sensitive words, templates, rules, campaigns, receipts."""
