"""`torchlab demo`: a local page that shows a trained model at work (views.py computes, page.py lays it out)."""
