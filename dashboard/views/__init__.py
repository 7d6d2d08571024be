"""The dashboard's pages (``st.navigation`` runs each file as a script; ``read_study`` imports ``pacs``)."""
